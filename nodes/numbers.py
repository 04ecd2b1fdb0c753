"""ComfyUI checks a FLOAT input against its min and max, and NaN passes both (every comparison with it is
false); JSON from an API client can carry NaN or Infinity (Python's json writes them by default)."""
import functools
import inspect
import math

from ..errors import AnimateDiffError


def finite(*names: str):
    """A node function that refuses NaN or an infinity in the named inputs."""
    def decorate(function):
        signature = inspect.signature(function)

        @functools.wraps(function)
        def checked(*args, **kwargs):
            values = signature.bind(*args, **kwargs).arguments
            for name in names:
                value = values.get(name)
                if value is not None and not math.isfinite(value):
                    raise AnimateDiffError(f"{name} is {value}, not a finite number: give it a number (an API "
                                           "client may have sent NaN or Infinity in its JSON).")
            return function(*args, **kwargs)
        checked.finite_inputs = names
        return checked
    return decorate
