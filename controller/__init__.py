"""mlfleet controller: inventory, playbooks, SSH, rollout, delivery, state, CLI and the lab."""
