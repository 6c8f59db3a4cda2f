"""Example recipes, installed as ``arcoforge.examples``; each runs with ``arcoforge bake``."""
