"""Papers of the 'optimisation' area (see seminal.syllabus)."""
