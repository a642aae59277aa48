# A GKE cluster for vlarena: a CPU node pool for everything, and a tainted GPU node pool that only
# pods tolerating nvidia.com/gpu (Triton, GPU workers) land on. The chart's gpuNodePool values
# match the label and taint set here.

locals {
  pool_label = "vlarena.dev/node-pool"
}

resource "google_container_cluster" "vlarena" {
  name     = var.cluster_name
  location = var.region

  node_locations = var.node_locations

  # The pools below replace the default one.
  remove_default_node_pool = true
  initial_node_count       = 1
  deletion_protection      = false

  release_channel {
    channel = "REGULAR"
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  # NetworkPolicies need an enforcing dataplane.
  datapath_provider = "ADVANCED_DATAPATH"

  addons_config {
    # ReadWriteMany volumes (storage class standard-rwx) for the artifact store.
    gcp_filestore_csi_driver_config {
      enabled = true
    }
    gce_persistent_disk_csi_driver_config {
      enabled = true
    }
  }
}

resource "google_container_node_pool" "cpu" {
  name     = "cpu"
  cluster  = google_container_cluster.vlarena.id
  location = var.region

  autoscaling {
    min_node_count = var.cpu_min_nodes
    max_node_count = var.cpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type = var.cpu_machine_type
    disk_size_gb = 100
    labels = {
      (local.pool_label) = "cpu"
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
  }
}

resource "google_container_node_pool" "gpu" {
  name     = "gpu"
  cluster  = google_container_cluster.vlarena.id
  location = var.region

  autoscaling {
    min_node_count = var.gpu_min_nodes
    max_node_count = var.gpu_max_nodes
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type = var.gpu_machine_type
    disk_size_gb = 200
    spot         = var.gpu_spot

    guest_accelerator {
      type  = var.gpu_type
      count = var.gpus_per_node
      # GKE installs the driver; the device plugin advertises nvidia.com/gpu.
      gpu_driver_installation_config {
        gpu_driver_version = "LATEST"
      }
    }

    labels = {
      (local.pool_label) = "gpu"
    }

    # Keeps every pod that does not ask for the GPU pool off these nodes.
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
    oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
  }
}
