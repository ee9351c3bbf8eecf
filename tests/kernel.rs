// Suite: kernel.
