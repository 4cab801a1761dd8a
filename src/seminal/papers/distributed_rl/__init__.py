"""Papers of the 'distributed-rl' area (see seminal.syllabus)."""
