"""Alias of arcoforge.runtime.injection: get_injection_specs for pangeo-forge-runner (see arcoforge.compat.alias)."""

from arcoforge.compat.alias import alias_module

alias_module(__name__)
