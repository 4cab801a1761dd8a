"""Papers of the 'multi-agent' area (see seminal.syllabus)."""
