"""Alias of :mod:`alignfuse.registration.classical` (registrars live in ``alignfuse/registration/``)."""

from ..registration.classical import *  # noqa: F401,F403
from ..registration.classical import __all__  # noqa: F401
