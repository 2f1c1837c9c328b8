"""Work on runs rather than inside one: ``compare`` (several runs and studies), ``report`` (tables and plots),
``plan`` (a run's resolved plan without weights), ``probe_study`` (the LLD probe), ``inspect`` (token views)."""
