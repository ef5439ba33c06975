"""Running untrusted model-written code."""
