"""The lab: a local fleet of simulated heterogeneous hosts (network namespaces with their
own sshd, Docker engine, cron daemon and hardware profile) plus a registry."""
