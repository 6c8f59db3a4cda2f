"""Recipe files written the way pangeo-forge users write them; tests/test_pgf_recipes.py ports and runs them.

They import ``pangeo_forge_recipes``, so pytest must not import them as modules.
"""

collect_ignore_glob = ["*.py"]
