// Suite: config.
