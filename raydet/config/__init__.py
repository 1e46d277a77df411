"""mmdetection-2.x style configs: loading, overrides, validation and normalisation.

Only builders read configs; the runner and hooks take built objects.
"""
from .loader import dump_config, import_custom_modules, load_config, merge_overrides
from .schema import validate_config

__all__ = ["load_config", "import_custom_modules", "merge_overrides", "dump_config", "validate_config"]
