"""Accounts: users, workspaces, gateway keys and users' own provider keys, with the rules that guard them."""
