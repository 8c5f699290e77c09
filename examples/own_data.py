# %% [markdown]
# # Clustering your own data from Python
#
# A table of 178 wines, 13 chemical measurements each (shipped with scikit-learn), clustered by DEC
# through the estimator API, then compared with k-means on the same features. Run it as a script
# (`python examples/own_data.py`) or cell by cell in an editor that reads `# %%` cells. Labels are
# used only to score the clusters.

# %%
import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

import jaxclust

x, y = load_wine(return_X_y=True)
print(f"{x.shape[0]} rows, {x.shape[1]} features, {len(np.unique(y))} classes")

# %% [markdown]
# Rows of features get the "vectors" recipe: features z-scored, the papers' autoencoder. Any setting of
# `jaxclust fit dec --help` is a keyword argument; nested ones as `group__name` or `group={...}`. Here a
# smaller network and shorter pretraining than the recipe's, for a run of seconds.

# %%
dec = jaxclust.DEC(n_clusters=3, seed=0, hidden=(64, 64), pretrain__epochs=20, cluster={"max_steps": 200})
labels = dec.fit_predict(x, y)
print(dec, "->", dec.workdir_)
print("cluster sizes:", np.bincount(labels).tolist())
print("DEC:", {k: round(v, 4) for k, v in dec.score(x, y).items()})

# %% [markdown]
# New rows get a cluster, how sure the model is, and an outlier score (the share of training rows
# nearer to their cluster's center; above 0.99 is farther out than 99% of the training data).

# %%
new = dec.assign(x[:5])
for label, confidence, outlier in zip(new.labels, new.confidence, new.outlier):
  print(f"cluster {label}  confidence {confidence:.3f}  outlier score {outlier:.3f}")
print("embedding:", dec.transform(x[:5]).shape, " centers:", dec.cluster_centers_.shape)

# %% [markdown]
# The same features through k-means, for comparison.

# %%
kmeans = KMeans(3, n_init=10, random_state=0).fit_predict(StandardScaler().fit_transform(x))
print("k-means:", {k: round(v, 4) for k, v in jaxclust.metrics.evaluate(y, kmeans).items()})
print(f"the report: {dec.workdir_}/report.html")
