"""Bundled prompt templates (a package only so that wheels ship the .txt files)."""
