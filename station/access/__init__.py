"""Who may do what (S8): accounts with roles, access requests, approvals, grants."""
