"""Kuramoto, reproduce-30 definition with 10 filter passes, StateMixFilter with
update='alternating' (the baselines cut to the bootstrap filter, the floor to 100
particles: only StateMixFilter's rows are compared with the joint run's)."""
import json, sys, joblib
import statemix_sk.experiments as ex
update = sys.argv[1]
original = ex._statemix_options
def options(settings, verbose=0):
    o = original(settings, verbose); o["update"] = update; return o
ex._statemix_options = options
ex.BASELINES = ex.BASELINES[:1]
ex.summarize = lambda r: []
with joblib.parallel_backend("multiprocessing"):
    r = ex.run_experiment("kuramoto", runs=10, n_particles=(100,), n_train=(50,), n_test=30,
                          filter_passes=10, floor_particles=100, n_jobs=2, verbose=1)
json.dump(r, open(f"/work/scratch/alt/{update}.json", "w"))
print("done")
