// Suite: util.
