"""HTTP/1.1 server on uvloop with httptools' parser, the router, and request tenancy."""
