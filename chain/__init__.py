"""The on-chain side of eranos: the program's spec, its build (linker), client and embedded localnet.

Imports none of the other packages (DESIGN.md): the coordinator and nodes use it, not the reverse.
"""
