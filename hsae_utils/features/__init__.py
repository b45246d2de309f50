"""Looking at an SAE's latents: per-latent statistics and contexts (`stats`, `rows`), interventions
(`interventions`), pluggable auto-interpretation (`autointerp`) and the one-call `inspect_sae`."""
