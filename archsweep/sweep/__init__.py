"""Sweeps: the sweep file, Ray Tune trials of the pipeline, cluster YAML checks and Ray Jobs submission."""
