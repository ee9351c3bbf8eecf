// Suite: privilege.
