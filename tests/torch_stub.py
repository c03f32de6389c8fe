"""A stand-in for `torch`, for reading lhotse's manifests in the tests without installing torch.

lhotse (1.33) imports torch at import time in most of its modules, only for type annotations, base
classes (`torch.nn.Module`, `torch.utils.data.Dataset`) and functions the manifest and audio code
paths tested here never call (RecordingSet/SupervisionSet I/O, validation, `load_audio` of a 16 kHz
WAV through soundfile). MODALINK never installs torch, so the tests import lhotse with this stub:
every `torch.*` module and attribute is an inert placeholder. `install()` is a no-op when the real
torch is importable. Anything that really calls torch would fail loudly (a placeholder is no tensor).
"""
import importlib.util
import importlib.abc
import importlib.machinery
import sys
import types

class _Meta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Dummy
    def __getitem__(cls, item):
        return cls
    def __call__(cls, *a, **k):
        if len(a) == 1 and callable(a[0]) and not k:
            return a[0]  # a decorator
        return cls
    def __or__(cls, other):
        return cls
    __ror__ = __or__

class _Dummy(metaclass=_Meta):
    pass

class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Dummy

class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name == "torch" or name.startswith("torch."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
    def create_module(self, spec):
        m = _Module(spec.name)
        m.__path__ = []
        m.__version__ = "0.0.0+stub"
        return m
    def exec_module(self, module):
        pass



def install() -> bool:
    """Put the stub in front of the import system unless torch is installed. True: the stub is in use."""
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        return False
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
    return True
