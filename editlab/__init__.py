__version__ = "0.1.0"

# The registry's entry points, imported lazily so `import editlab` stays light: `editlab.methods()` imports the
# method modules it discovers (editlab.registry.load_methods), never a fixed list.
_REGISTRY_NAMES = ('methods', 'get_method', 'register', 'load_methods')

def __getattr__(name):
    if name in _REGISTRY_NAMES:
        from . import registry
        return getattr(registry, name)
    raise AttributeError(f"module 'editlab' has no attribute {name!r}")
