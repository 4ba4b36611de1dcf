"""One module per command group; each only parses options, calls the client and renders."""
