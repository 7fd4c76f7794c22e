"""Pure rules modules, one per game; none imports PettingZoo or Gymnasium."""
