// Suite: proto.
