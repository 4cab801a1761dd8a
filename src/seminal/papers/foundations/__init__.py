"""Papers of the 'foundations' area (see seminal.syllabus)."""
