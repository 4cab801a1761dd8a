"""Papers of the 'rl' area (see seminal.syllabus)."""
