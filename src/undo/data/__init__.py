"""Data files the package ships beside its code (read with `Path(__file__).parent`)."""
