"""Errors that the command line prints as one line (no traceback) and turns into a non-zero exit."""


class SeminalError(Exception):
    """A problem the user can fix; the message names the fix."""


class Interrupted(SeminalError):
    """Training stopped on request (Ctrl-C) after writing a checkpoint."""

    def __init__(self, run_dir: str, paper: str):
        super().__init__(
            f"interrupted; checkpoint saved in {run_dir}. Resume with: seminal run {paper} --resume {run_dir}"
        )
        self.run_dir = run_dir
