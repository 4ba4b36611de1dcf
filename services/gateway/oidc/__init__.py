"""Single sign-on with OpenID Connect (authlib): the client, the flow, claims and sign-in."""
