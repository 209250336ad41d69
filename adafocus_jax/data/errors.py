"""The one exception type the data pipeline raises for bad input data.

Every `DataError` message starts with where the problem is: a list file and line
(`lists/train.txt:17: ...`), a frame file, a video file or a TFDS record, so that a
user can fix the data without reading the code.
"""


class DataError(ValueError):
    """Bad input data: malformed list line, missing or corrupt frame, missing video, ...

    Attributes:
      origin: where the problem is, e.g. "train_videofolder.txt:12" or a file path.
    """

    def __init__(self, origin: str, message: str):
        self.origin = origin
        self.detail = message
        super().__init__(f"{origin}: {message}")
