variable "project_id" {
  description = "Google Cloud project that holds the cluster."
  type        = string
}

variable "region" {
  description = "Region of the cluster (a regional control plane)."
  type        = string
  default     = "europe-west4"
}

variable "node_locations" {
  description = "Zones of the node pools; pick zones that offer gpu_type."
  type        = list(string)
  default     = ["europe-west4-a"]
}

variable "cluster_name" {
  description = "Name of the GKE cluster."
  type        = string
  default     = "vlarena"
}

variable "cpu_machine_type" {
  description = "Machine type of the CPU pool (gateway, CPU workers, Redis, monitoring)."
  type        = string
  default     = "e2-standard-8"
}

variable "cpu_min_nodes" {
  description = "Fewest nodes per zone in the CPU pool."
  type        = number
  default     = 1
}

variable "cpu_max_nodes" {
  description = "Most nodes per zone in the CPU pool."
  type        = number
  default     = 6
}

variable "gpu_machine_type" {
  description = "Machine type of the GPU pool (Triton, GPU workers); must accept gpu_type."
  type        = string
  default     = "g2-standard-8"
}

variable "gpu_type" {
  description = "Accelerator attached to each GPU node."
  type        = string
  default     = "nvidia-l4"
}

variable "gpus_per_node" {
  description = "Accelerators per GPU node."
  type        = number
  default     = 1
}

variable "gpu_min_nodes" {
  description = "Fewest nodes per zone in the GPU pool; 0 lets it scale to nothing."
  type        = number
  default     = 0
}

variable "gpu_max_nodes" {
  description = "Most nodes per zone in the GPU pool."
  type        = number
  default     = 4
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool (cheaper; workers checkpoint and requeue when preempted)."
  type        = bool
  default     = false
}
