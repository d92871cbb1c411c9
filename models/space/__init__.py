"""The search-space vocabulary: which subnets exist (`search_space.SearchSpace`, loaded from
TOML; shipped files in `presets/`) and the identity of one of them (`subnet.SubnetConfig`).
Standard library only: a device or a planner can import it without torch.
"""
