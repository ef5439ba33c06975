"""Built-in math tasks: GSM8K and MATH-500 with symbolic answer equivalence."""
