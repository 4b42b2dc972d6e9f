"""API server access, used only by the cluster agent's collectors (apiserver, events, kube_system).

- `client`: where an API server is and how to authenticate to it (`KubeTarget`), and the
  `endpoint`/`kubeconfig` options those collectors share;
- `watch`: list+watch of one collection (`Reflector`);
- `leader`: leader election on a Lease (`LeaseElector`).

kubernetes-asyncio is large (every API model: about 37 MiB resident). `client` imports it
only when a collector first builds a client; `watch` and `leader` import it at the top and
are themselves imported only from the code that runs them. A node agent never loads it.
"""
