"""Will a run fit? The analytic memory plan and the ahead-of-time XLA compile of the same steps."""
