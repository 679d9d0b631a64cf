"""Authorization: the compiled route policy and the checks a principal must pass on a route."""
