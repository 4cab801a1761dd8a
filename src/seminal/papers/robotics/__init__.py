"""Papers of the 'robotics' area (see seminal.syllabus)."""
