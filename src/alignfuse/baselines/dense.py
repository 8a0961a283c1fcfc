"""Alias of :mod:`alignfuse.registration.instance` (registrars live in ``alignfuse/registration/``)."""

from ..registration.instance import *  # noqa: F401,F403
from ..registration.instance import __all__  # noqa: F401
