"""The prompt system: the SFT set built from prompt pools (Baichuan Alignment's "prompt system").

``records`` reads prompt pools; ``tags`` tags them on six dimensions; ``embed`` embeds them;
``select`` removes duplicates and template repeats and fills quotas; ``quality`` scores them;
``responses`` builds the answers; ``stage`` runs it all and writes the set with every decision.
"""
