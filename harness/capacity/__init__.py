"""Capacity planning (`harness plan`): what a suite starts where, how much memory each server and fine-tune needs
per GPU, how long it will take and what it will cost, from the models' shapes alone; and the layouts that cannot
run, refused before any work (`harness run` applies the same checks on a GPU machine)."""

from harness.capacity.checks import layout_problems
from harness.capacity.estimate import TaskDemand, TrainingDemand
from harness.capacity.gpus import GPUS, Gpu, gpu_named, local_gpu
from harness.capacity.planner import CapacityPlan, plan_capacity
from harness.capacity.render import tables, to_dict
from harness.capacity.shapes import ModelShape, shape_of

__all__ = ["GPUS", "CapacityPlan", "Gpu", "ModelShape", "TaskDemand", "TrainingDemand", "gpu_named",
           "layout_problems", "local_gpu", "plan_capacity", "shape_of", "tables", "to_dict"]
