output "cluster_name" {
  description = "Name of the cluster."
  value       = google_container_cluster.vlarena.name
}

output "get_credentials" {
  description = "Command that writes the cluster's kubeconfig entry."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.vlarena.name} --region ${var.region} --project ${var.project_id}"
}

output "gpu_node_selector" {
  description = "The chart's gpuNodePool.nodeSelector for this cluster."
  value       = { "vlarena.dev/node-pool" = "gpu" }
}
