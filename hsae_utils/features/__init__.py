"""Looking at an SAE's latents: per-latent statistics and contexts (`stats`, `rows`, stored by
`inspect`: `inspect_sae`, `sae_stats`), `interventions`, `autointerp`, and notebook 12's `showcase`."""
