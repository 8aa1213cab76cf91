"""Scale-out: several proxy nodes share what they learn through Redis
([cluster]). The sans-I/O parts (journal, keys) are separate from the one
async edge (link) that talks to Redis."""
