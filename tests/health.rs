// Suite: health.
