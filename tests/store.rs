// Suite: store.
