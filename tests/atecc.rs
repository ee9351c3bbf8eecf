// Suite: atecc.
