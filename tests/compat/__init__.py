"""Tavrida 1.0 code on tavrida2: one test module per row of docs/migrating.md."""
