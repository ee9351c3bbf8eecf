// Suite: fortuna.
