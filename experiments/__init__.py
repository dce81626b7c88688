"""Experiment drivers composed from the library (the synthetic demo, the studies). Nothing in the library
imports them."""
