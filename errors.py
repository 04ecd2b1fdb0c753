"""The one error type users see from this pack: what is wrong, where, and what to do about it."""


class AnimateDiffError(Exception):
    """A problem the user can fix; the message names the file or input and says what to do."""


class ModelFileError(AnimateDiffError):
    def __init__(self, path, problem: str, advice: str = ""):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}" + (f" {advice}" if advice else ""))
